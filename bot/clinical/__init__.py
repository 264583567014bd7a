"""Clinical decisions: the safety layer's emergency and crisis detection, and triage.

Everything here is deterministic and data-driven: the rules a clinician reviews live in
`bot/clinical/rules/*.yml`, and the code only reads text the way those rules describe. This package
runs in both Python environments (the platform's 3.11 and Rasa's 3.10 action server), so it
depends on the standard library and PyYAML only.
"""
