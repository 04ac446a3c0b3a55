"""The small library every service uses. No business rules live here."""
