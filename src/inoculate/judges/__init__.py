"""LLM judges: an OpenAI-compatible endpoint, a prompt template and a scoring rule, usable wherever a scorer
is (the emergent-misalignment metrics of Betley et al. and Tan et al. need them)."""
