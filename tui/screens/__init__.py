"""The app's modal screens: confirm, text prompt, corpus picker, help."""
