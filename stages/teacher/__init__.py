"""Stage one: LoRA fine-tune an LLM teacher and write the teacher-logit cache."""
