"""The console (SPEC 8): server-rendered pages over the other services' HTTP APIs."""
