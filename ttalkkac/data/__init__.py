"""Gold-standard data: loading, training examples with label masking, chat JSONL."""
