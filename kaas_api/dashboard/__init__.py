"""The admin dashboard at ``/admin``: server-rendered pages for global admins over the same services as
the API."""
