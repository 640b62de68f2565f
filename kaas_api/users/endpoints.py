"""HTTP endpoints of ``/v1/users`` (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from kaas_api.deps import Admin, Uow
from kaas_api.users import service
from kaas_api.users.schemas import UserCreate, UserCreated, UserOut
from kaas_core.db.models import User

router = APIRouter(prefix="/v1/users", tags=["users"])


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, name=user.name, is_admin=user.is_admin, created_at=user.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserCreated)
def create_user(body: UserCreate, admin: Admin, uow: Uow) -> UserCreated:
    """Create a user (admins only). The response carries the user's first token, shown once."""
    user, token = service.create_user(uow.session, name=body.name, is_admin=body.is_admin)
    return UserCreated(user=user_out(user), token=token)


@router.get("", response_model=list[UserOut])
def list_users(admin: Admin, uow: Uow) -> list[UserOut]:
    return [user_out(user) for user in service.list_users(uow.session)]
