"""Users: global admins and regular users."""
