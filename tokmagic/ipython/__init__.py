"""tokmagic inside IPython: the only place that imports IPython."""
