"""AMI engine: a decision regulator and the offline loop that tunes its thresholds."""

__version__ = "0.1.0"
ENGINE_MODEL = "ami-v1"
