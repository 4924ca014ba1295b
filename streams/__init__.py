"""The MATS intraday stream app (Faust): ``faust -A streams.app worker``."""
