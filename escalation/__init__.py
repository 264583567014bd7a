"""Staff escalation (cases, routing, Mattermost). Arrives with the escalation issue."""
