-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d), as the
-- POSTGRES_USER (shopml), who owns all three: MLflow's tracking and registry store, Prefect's
-- database, and shopml's monitoring store (prediction log, checks, decisions).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE shopml_monitoring;
