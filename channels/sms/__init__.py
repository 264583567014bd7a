"""SMS channel (Twilio Messaging). Arrives with the SMS issue; the contract it will speak is bot.contract."""
