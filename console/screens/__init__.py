"""The console's views (one module and one stylesheet each) and its dialogs."""
