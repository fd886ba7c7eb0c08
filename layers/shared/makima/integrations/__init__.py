"""Integrations of makima with agent frameworks: ``langgraph`` (a LangGraph checkpointer)."""
