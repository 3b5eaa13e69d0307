"""Operations: health, metrics and the fleet board, logs, the data disk."""
