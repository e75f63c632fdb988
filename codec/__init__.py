"""The golden codec: the definition every other part of temposplit matches bit for bit."""
