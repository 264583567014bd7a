"""LLM providers, the router and model registry manifests. Arrive with the knowledge-base issue."""
