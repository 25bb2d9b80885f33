-- Run once by the postgres image, when its data volume is first initialised (never again after:
-- to start over, `docker compose down -v`). POSTGRES_DB already created the Optuna database
-- "optuna"; this adds the MLflow tracking server's database, owned by POSTGRES_USER.
CREATE DATABASE mlflow;
