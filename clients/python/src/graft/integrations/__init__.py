"""Drop-in callbacks: Hugging Face ``transformers.Trainer`` and Lightning."""
