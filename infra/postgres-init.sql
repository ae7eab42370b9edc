-- The MLflow tracking server's database, beside Airflow's (docker-compose.yml).
CREATE DATABASE mlflow OWNER airflow;
