"""The chat use case: requests, prompts, answer-sheet discipline, the offline answerer."""
