from django.db import models


class Account(models.Model):
    username = models.CharField(max_length=64, unique=True)
    email = models.EmailField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("username",)

    def __str__(self) -> str:
        return self.username

    def as_dict(self) -> dict[str, str]:
        return {
            "username": self.username,
            "email": self.email,
            "created": self.created.isoformat(),
        }
