"""Knowledge base: ingestion, index and retrieval. Arrives with the knowledge-base issue."""
