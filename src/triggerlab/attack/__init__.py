"""The attack: poisoning a training set, the task's loss and metrics, and what stealth costs."""
