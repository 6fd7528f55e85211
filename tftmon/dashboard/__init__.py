"""The operator's dashboard: a Streamlit app that reads only the service's HTTP API.

No torch, MLflow or model files here (docs/ARCHITECTURE.md, checked by tests/code/test_architecture.py):
the dashboard runs on any machine that can reach the service, and a broken model never breaks it.
"""
