"""Evaluation on a dataset's held-out records: the chat loss every model is compared by, the format matrix and
greedy samples (`evaluate`), and the run's comparison (`report`)."""

CHAT_CUTOFF = 8192  # the chat loss's cutoff_len, the longest variant's
MAX_NEW_TOKENS = 512  # the longest answer
GENERATE_BATCH = 8  # prompts per generate call on one rank
