"""Operations: MLflow tracking, the model registry and the jobs that orchestrate the pipeline."""
