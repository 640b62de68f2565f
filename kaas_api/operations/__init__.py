"""Operations: one requested change of a cluster and its progress."""
