"""The clinic's knowledge base: ingestion, index and retrieval (`python -m rag`).

Documents (Markdown with front matter, HTML, PDF, plain text) become heading-aware chunks,
embedded with sentence-transformers and stored in Chroma; retrieval fuses BM25 and vector ranks.
"""
