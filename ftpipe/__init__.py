"""ftpipe: declarative LLM fine-tuning on Ludwig, with base-versus-tuned evaluation."""

__version__ = "0.1.0"
