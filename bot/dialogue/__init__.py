"""The dialogue engine: tracker, policies, actions and the assistant."""
