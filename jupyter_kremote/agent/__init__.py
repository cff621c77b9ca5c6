"""The agent: the process in each pod (or local subprocess) that runs cells."""
