"""Channel adapters. Each turns its vendor's events into `bot.contract.Inbound` messages and
renders replies back; each depends on the bot's contract and orchestrator only."""
