-- Databases beside the platform's own: Rasa's tracker store and Mattermost.
CREATE DATABASE rasa_tracker OWNER clinic;
CREATE DATABASE mattermost OWNER clinic;
