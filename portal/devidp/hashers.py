from django.contrib.auth.hashers import PBKDF2PasswordHasher


class DevPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Few iterations: the development provider only ever guards demo accounts on loopback."""

    iterations = 1000
