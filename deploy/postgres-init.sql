-- Databases beside the platform's own: Rasa's tracker store and Mattermost.
-- PostgreSQL runs this once, when it creates its data volume. It is safe to run again, e.g. for
-- a volume made before a database was added here:
--   docker compose exec -T postgres psql -U clinic -d clinic < deploy/postgres-init.sql
-- (CREATE DATABASE has no IF NOT EXISTS; psql's \gexec runs it only when the query returns it.)
SELECT 'CREATE DATABASE rasa_tracker OWNER clinic'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'rasa_tracker')\gexec
SELECT 'CREATE DATABASE mattermost OWNER clinic'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mattermost')\gexec
