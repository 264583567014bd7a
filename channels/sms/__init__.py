"""SMS channel (Twilio Messaging). Arrives with the SMS issue; it speaks bot.contract."""
