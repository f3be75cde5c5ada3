"""The app's widgets: header, training pane, generation pane."""
