"""A sweep: its status while it runs, its summary when it ends."""
