-- Run once by the postgres image, on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d), as POSTGRES_USER, who then owns both databases.
-- One server, two databases: Prefect's (the API's state) and MLflow's (runs, models).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
