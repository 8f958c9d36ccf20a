"""The contract every :class:`~mfa_guard.stores.sites.SiteDirectory` keeps, as a pytest class.

Subclass it in a test module (the name must start with ``Test``) and provide an async fixture
``directory`` that yields a fresh, empty directory::

    from mfa_guard.testing.sites_contract import SiteDirectoryContract

    class TestMyDirectory(SiteDirectoryContract):
        @pytest.fixture
        async def directory(self) -> AsyncIterator[MyDirectory]:
            directory = MyDirectory(...)
            yield directory
            await directory.close()

The tests need pytest-asyncio (``asyncio_mode = "auto"``) or an equivalent runner.
"""

from __future__ import annotations

import asyncio

from mfa_guard.stores.sites import (
    Member,
    Membership,
    MethodPolicy,
    Requirements,
    Role,
    Site,
    SiteDirectory,
    SitePolicy,
    requirements_of,
)

__all__ = ["SiteDirectoryContract"]

NOW = 1_800_000_000.5
DAY = 86_400.0
CONCURRENT_MEMBERS = 20


def enforcing(deadline: float, *, by: str = "olivia", at: float = NOW) -> SitePolicy:
    """The policy an owner sets when turning enforcement on, with a grace period to ``deadline``."""
    return SitePolicy(enforce=True, grace_deadline=deadline, changed_by=by, changed_at=at)


def methods(
    accepted: MethodPolicy,
    deadline: float | None,
    *,
    grace_deadline: float | None = NOW,
    by: str = "olivia",
    at: float = NOW,
) -> SitePolicy:
    """An enforcing policy that accepts only ``accepted`` from ``deadline`` on (``None``: at
    once), 2FA itself required from ``grace_deadline``."""
    return SitePolicy(
        enforce=True,
        grace_deadline=grace_deadline,
        changed_by=by,
        changed_at=at,
        methods=accepted,
        methods_deadline=deadline,
    )


# Every shape of policy a directory keeps, each as it must come back.
POLICIES = (
    SitePolicy(),
    SitePolicy(enforce=True),
    enforcing(NOW + DAY),
    SitePolicy(enforce=False, grace_deadline=NOW, changed_by="bo", changed_at=NOW),
    methods(MethodPolicy.NO_SMS, NOW + 2 * DAY, grace_deadline=NOW + DAY),
    methods(MethodPolicy.PHISHING_RESISTANT, NOW + 3 * DAY),
    methods(MethodPolicy.PHISHING_RESISTANT, None, grace_deadline=None),
    methods(MethodPolicy.ANY, None),
    # Methods left on a policy that is off (an app's own write): kept as they are.
    SitePolicy(
        enforce=False,
        changed_by="bo",
        changed_at=NOW,
        methods=MethodPolicy.PHISHING_RESISTANT,
        methods_deadline=NOW,
    ),
)


def turned_off(*, by: str = "olivia", at: float = NOW) -> SitePolicy:
    return SitePolicy(enforce=False, grace_deadline=None, changed_by=by, changed_at=at)


async def site_with(directory: SiteDirectory, site_id: str, name: str, **members: Role) -> Site:
    """Create a site and add ``members`` (user id → role), as an app's sign-up flow would."""
    site = await directory.save_site(site_id, name)
    for user_id, role in members.items():
        assert await directory.add_member(site_id, user_id, role) is True
    return site


class SiteDirectoryContract:
    """Scenarios a site directory must pass; subclasses provide the ``directory`` fixture."""

    async def test_an_unknown_user_has_no_sites_and_no_deadline(
        self, directory: SiteDirectory
    ) -> None:
        assert await directory.memberships("alice") == []
        assert await directory.deadline("alice") is None

    async def test_an_unknown_site_has_nothing(self, directory: SiteDirectory) -> None:
        assert await directory.site("acme") is None
        assert await directory.members("acme") == []
        assert await directory.role("acme", "alice") is None
        assert await directory.remove_member("acme", "alice") is False

    async def test_nobody_joins_an_unknown_site(self, directory: SiteDirectory) -> None:
        assert await directory.add_member("acme", "alice", Role.OWNER) is False

        assert await directory.site("acme") is None
        assert await directory.members("acme") == []
        assert await directory.role("acme", "alice") is None
        assert await directory.memberships("alice") == []
        # Nor is anybody waiting there for the site to be created.
        await directory.save_site("acme", "Acme")
        assert await directory.members("acme") == []

    async def test_no_policy_is_set_on_an_unknown_site(self, directory: SiteDirectory) -> None:
        assert await directory.set_policy("acme", enforcing(NOW + DAY)) is False

        assert await directory.site("acme") is None

    async def test_a_new_site_has_no_members_and_its_policy_off(
        self, directory: SiteDirectory
    ) -> None:
        site = await directory.save_site("acme", "Acme")

        assert site == Site("acme", "Acme", SitePolicy())
        assert await directory.site("acme") == site
        assert await directory.members("acme") == []

    async def test_renaming_a_site_keeps_its_policy_and_members(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER, oscar=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + DAY))

        renamed = await directory.save_site("acme", "Acme Corp")

        assert renamed == Site("acme", "Acme Corp", enforcing(NOW + DAY))
        assert await directory.site("acme") == renamed
        assert await directory.members("acme") == [
            Member("olivia", Role.OWNER),
            Member("oscar", Role.OPERATOR),
        ]
        assert await directory.memberships("oscar") == [Membership(renamed, Role.OPERATOR)]
        assert await directory.deadline("oscar") == NOW + DAY

    async def test_saving_a_site_again_changes_nothing(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER)

        again = await directory.save_site("acme", "Acme")

        assert again == Site("acme", "Acme", SitePolicy())
        assert await directory.members("acme") == [Member("olivia", Role.OWNER)]

    async def test_a_member_has_a_role(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER, oscar=Role.OPERATOR)

        assert await directory.role("acme", "olivia") is Role.OWNER
        assert await directory.role("acme", "oscar") is Role.OPERATOR
        assert await directory.role("acme", "mallory") is None

    async def test_members_are_ordered_by_user_id(self, directory: SiteDirectory) -> None:
        await site_with(
            directory, "acme", "Acme", zoe=Role.OPERATOR, adam=Role.OWNER, mia=Role.OPERATOR
        )

        assert await directory.members("acme") == [
            Member("adam", Role.OWNER),
            Member("mia", Role.OPERATOR),
            Member("zoe", Role.OPERATOR),
        ]

    async def test_memberships_are_ordered_by_site_name_then_id(
        self, directory: SiteDirectory
    ) -> None:
        # Ids in the opposite order of the names, and two sites of one name.
        await site_with(directory, "site-1", "zebra shop", alice=Role.OPERATOR)
        await site_with(directory, "site-3", "acme", alice=Role.OWNER)
        await site_with(directory, "site-2", "acme", alice=Role.OPERATOR)
        await site_with(directory, "site-0", "support desk", bob=Role.OWNER)

        found = await directory.memberships("alice")

        assert [(m.site.id, m.site.name, m.role) for m in found] == [
            ("site-2", "acme", Role.OPERATOR),
            ("site-3", "acme", Role.OWNER),
            ("site-1", "zebra shop", Role.OPERATOR),
        ]

    async def test_memberships_carry_each_sites_policy(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OWNER)
        await directory.set_policy("blog", enforcing(NOW + DAY))

        assert await directory.memberships("alice") == [
            Membership(Site("acme", "Acme", SitePolicy()), Role.OPERATOR),
            Membership(Site("blog", "Blog", enforcing(NOW + DAY)), Role.OWNER),
        ]

    async def test_setting_a_policy_replaces_it(self, directory: SiteDirectory) -> None:
        await directory.save_site("acme", "Acme")

        assert await directory.set_policy("acme", enforcing(NOW + DAY, by="olivia")) is True
        assert await directory.site("acme") == Site("acme", "Acme", enforcing(NOW + DAY))

        off = turned_off(by="owen", at=NOW + 60)
        assert await directory.set_policy("acme", off) is True
        assert await directory.site("acme") == Site("acme", "Acme", off)

    async def test_adding_a_member_again_changes_their_role(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", oscar=Role.OPERATOR)

        assert await directory.add_member("acme", "oscar", Role.OWNER) is True

        assert await directory.role("acme", "oscar") is Role.OWNER
        assert await directory.members("acme") == [Member("oscar", Role.OWNER)]
        memberships = await directory.memberships("oscar")
        assert [(m.site.id, m.role) for m in memberships] == [("acme", Role.OWNER)]
        # And back, and once more the same: still one membership.
        assert await directory.add_member("acme", "oscar", Role.OPERATOR) is True
        assert await directory.add_member("acme", "oscar", Role.OPERATOR) is True
        assert await directory.members("acme") == [Member("oscar", Role.OPERATOR)]

    async def test_removing_a_member(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER, oscar=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", oscar=Role.OWNER)

        assert await directory.remove_member("acme", "oscar") is True

        assert await directory.role("acme", "oscar") is None
        assert await directory.members("acme") == [Member("olivia", Role.OWNER)]
        assert [m.site.id for m in await directory.memberships("oscar")] == ["blog"]
        assert await directory.remove_member("acme", "oscar") is False

    async def test_removing_a_non_member_is_refused(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER)
        await site_with(directory, "blog", "Blog", mallory=Role.OWNER)

        assert await directory.remove_member("acme", "mallory") is False

        assert await directory.members("acme") == [Member("olivia", Role.OWNER)]
        assert await directory.members("blog") == [Member("mallory", Role.OWNER)]

    async def test_a_member_of_sites_not_enforcing_has_no_deadline(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await directory.set_policy("acme", turned_off())

        assert await directory.deadline("alice") is None

    async def test_the_deadline_is_the_earliest_among_enforcing_sites(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OWNER)
        await site_with(directory, "shop", "Shop", alice=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + 7 * DAY))
        await directory.set_policy("blog", enforcing(NOW + 2 * DAY))

        assert await directory.deadline("alice") == NOW + 2 * DAY

    async def test_a_site_not_enforcing_does_not_count_whatever_its_deadline(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + 7 * DAY))
        # An earlier deadline left on a policy that is off.
        lapsed = SitePolicy(enforce=False, grace_deadline=NOW, changed_by="bo", changed_at=NOW)
        await directory.set_policy("blog", lapsed)

        assert await directory.deadline("alice") == NOW + 7 * DAY

    async def test_a_policy_turned_off_stops_counting(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + 7 * DAY))
        await directory.set_policy("blog", enforcing(NOW + DAY))

        await directory.set_policy("blog", turned_off(at=NOW + 60))

        assert await directory.deadline("alice") == NOW + 7 * DAY
        await directory.set_policy("acme", turned_off(at=NOW + 60))
        assert await directory.deadline("alice") is None

    async def test_a_membership_removed_stops_counting(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + 7 * DAY))
        await directory.set_policy("blog", enforcing(NOW + DAY))

        await directory.remove_member("blog", "alice")

        assert await directory.deadline("alice") == NOW + 7 * DAY
        await directory.remove_member("acme", "alice")
        assert await directory.deadline("alice") is None

    async def test_joining_an_enforcing_site_brings_its_deadline(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", olivia=Role.OWNER)
        await directory.set_policy("acme", enforcing(NOW + DAY))
        assert await directory.deadline("alice") is None

        await directory.add_member("acme", "alice", Role.OPERATOR)

        assert await directory.deadline("alice") == NOW + DAY

    async def test_an_enforcing_policy_without_a_deadline_enforces_at_once(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + DAY))

        await directory.set_policy("blog", SitePolicy(enforce=True))

        assert await directory.deadline("alice") == 0.0

    async def test_users_and_sites_do_not_interfere(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OWNER)
        await site_with(directory, "blog", "Blog", bob=Role.OPERATOR)
        await directory.set_policy("acme", enforcing(NOW + DAY))

        assert await directory.deadline("bob") is None
        assert await directory.deadline("alice") == NOW + DAY
        assert [m.site.id for m in await directory.memberships("alice")] == ["acme"]
        assert [m.site.id for m in await directory.memberships("bob")] == ["blog"]
        assert await directory.role("blog", "alice") is None
        assert await directory.role("acme", "bob") is None
        assert await directory.members("blog") == [Member("bob", Role.OPERATOR)]
        assert await directory.site("blog") == Site("blog", "Blog", SitePolicy())

    async def test_concurrent_additions_all_land(self, directory: SiteDirectory) -> None:
        await directory.save_site("acme", "Acme")
        user_ids = [f"user-{n:02}" for n in range(CONCURRENT_MEMBERS)]

        results = await asyncio.gather(
            *(directory.add_member("acme", user_id, Role.OPERATOR) for user_id in user_ids)
        )

        assert results == [True] * CONCURRENT_MEMBERS
        assert await directory.members("acme") == [Member(u, Role.OPERATOR) for u in user_ids]

    async def test_concurrent_saves_of_a_new_site_create_it_once(
        self, directory: SiteDirectory
    ) -> None:
        saved = await asyncio.gather(
            *(directory.save_site("acme", "Acme") for _ in range(CONCURRENT_MEMBERS))
        )

        assert set(saved) == {Site("acme", "Acme", SitePolicy())}
        assert await directory.add_member("acme", "olivia", Role.OWNER) is True
        assert await directory.members("acme") == [Member("olivia", Role.OWNER)]

    # -- the methods a site accepts, and what a user's sites require --------------------------

    async def test_every_policy_comes_back_as_it_was_set(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OWNER)

        for policy in POLICIES:
            assert await directory.set_policy("acme", policy) is True

            site = Site("acme", "Acme", policy)
            assert await directory.site("acme") == site
            assert await directory.memberships("alice") == [Membership(site, Role.OWNER)]
            assert await directory.requirements("alice") == requirements_of([policy])

    async def test_a_user_of_no_enforcing_site_is_required_nothing(
        self, directory: SiteDirectory
    ) -> None:
        assert await directory.requirements("alice") == Requirements()
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        assert await directory.requirements("alice") == Requirements()

    async def test_methods_count_only_while_the_site_enforces(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        lapsed = SitePolicy(
            enforce=False,
            grace_deadline=NOW,
            changed_by="bo",
            changed_at=NOW,
            methods=MethodPolicy.PHISHING_RESISTANT,
            methods_deadline=NOW,
        )

        await directory.set_policy("acme", lapsed)

        assert await directory.requirements("alice") == Requirements()
        assert await directory.deadline("alice") is None

    async def test_no_sms_requires_2fa_and_no_texted_code(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)

        await directory.set_policy(
            "acme", methods(MethodPolicy.NO_SMS, NOW + 2 * DAY, grace_deadline=NOW + DAY)
        )

        assert await directory.requirements("alice") == Requirements(
            enrol_by=NOW + DAY, no_sms_by=NOW + 2 * DAY
        )

    async def test_phishing_resistant_refuses_texted_codes_too(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)

        await directory.set_policy("acme", methods(MethodPolicy.PHISHING_RESISTANT, NOW + DAY))

        assert await directory.requirements("alice") == Requirements(
            enrol_by=NOW, no_sms_by=NOW + DAY, passkey_by=NOW + DAY
        )

    async def test_a_policy_at_once_is_required_from_0(self, directory: SiteDirectory) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", methods(MethodPolicy.NO_SMS, NOW + DAY))

        await directory.set_policy(
            "blog", methods(MethodPolicy.PHISHING_RESISTANT, None, grace_deadline=None)
        )

        assert await directory.requirements("alice") == Requirements(0.0, 0.0, 0.0)

    async def test_the_earliest_deadline_of_each_requirement_wins(
        self, directory: SiteDirectory
    ) -> None:
        for site_id in ("acme", "blog", "shop", "wiki"):
            await site_with(directory, site_id, site_id.title(), alice=Role.OPERATOR)
        # Each requirement's earliest deadline on another site.
        await directory.set_policy(
            "acme", methods(MethodPolicy.PHISHING_RESISTANT, NOW + 9 * DAY, grace_deadline=NOW)
        )
        await directory.set_policy(
            "blog", methods(MethodPolicy.NO_SMS, NOW + 4 * DAY, grace_deadline=NOW + DAY)
        )
        await directory.set_policy(
            "shop",
            methods(MethodPolicy.PHISHING_RESISTANT, NOW + 6 * DAY, grace_deadline=NOW + DAY),
        )
        await directory.set_policy("wiki", methods(MethodPolicy.ANY, None, grace_deadline=None))

        found = await directory.requirements("alice")

        assert found == Requirements(
            enrol_by=0.0, no_sms_by=NOW + 4 * DAY, passkey_by=NOW + 6 * DAY
        )
        policies = [m.site.policy for m in await directory.memberships("alice")]
        assert found == requirements_of(policies)
        assert await directory.deadline("alice") == 0.0

    async def test_requirements_follow_memberships_and_policy_changes(
        self, directory: SiteDirectory
    ) -> None:
        await site_with(directory, "acme", "Acme", alice=Role.OPERATOR, bob=Role.OPERATOR)
        await site_with(directory, "blog", "Blog", alice=Role.OPERATOR)
        await directory.set_policy("acme", methods(MethodPolicy.NO_SMS, NOW + 2 * DAY))
        await directory.set_policy("blog", methods(MethodPolicy.PHISHING_RESISTANT, NOW + DAY))

        await directory.remove_member("blog", "alice")

        assert await directory.requirements("alice") == Requirements(NOW, NOW + 2 * DAY, None)
        await directory.set_policy("acme", enforcing(NOW + DAY))
        assert await directory.requirements("alice") == Requirements(NOW + DAY, None, None)
        await directory.set_policy("acme", turned_off())
        assert await directory.requirements("alice") == Requirements()
        # Bob was never on the blog: its policy never reached him.
        assert await directory.requirements("bob") == Requirements()
        assert await directory.requirements("nobody") == Requirements()
