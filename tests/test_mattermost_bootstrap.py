"""`python -m escalation.bootstrap` against the fake Mattermost, driven by the real
mattermostdriver: what a clinic's IT sees when they set up staff escalation, and run it again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mattermostdriver import Driver  # type: ignore[import-untyped, unused-ignore]

from escalation import bootstrap
from tests.fakes.mattermost_server import FakeMattermost

PUBLIC = "https://clinic.example.org"
ENV_NAMES = (
    "MATTERMOST_URL",
    "MATTERMOST_ADMIN_TOKEN",
    "MATTERMOST_TEAM",
    "PUBLIC_BASE_URL",
    "MATTERMOST_ONCALL_USERS",
    "MATTERMOST_SUPERVISOR_USERS",
    "MATTERMOST_BOT_USERNAME",
)


@dataclass
class Run:
    code: int
    env: dict[str, str]
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeMattermost]:
    with FakeMattermost(team_name="clinic") as server:
        for username, first, position in (
            ("dana", "Dana", "Nurse"),
            ("sam", "Sam", "Nurse"),
            ("lee", "Lee", "Charge nurse"),
            ("alex", "Alex", "Nurse"),
        ):
            server.add_user(username, first_name=first, position=position)
        yield server


def run(
    fake: FakeMattermost,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    token: str | None = None,
    team: str = "care-team",
    public: str = PUBLIC,
) -> Run:
    argv = [
        "--url",
        fake.base_url,
        "--admin-token",
        fake.admin_token if token is None else token,
        "--team",
        team,
        "--public-base-url",
        public,
        *args,
    ]
    code = bootstrap.main(argv)
    out, err = capsys.readouterr()
    env = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            env[name] = value
    return Run(code, env, out, err)


def admin(fake: FakeMattermost) -> Any:
    driver = Driver(fake.driver_options(fake.admin_token))
    driver.login()
    return driver


def channel(fake: FakeMattermost, team: str, name: str) -> dict[str, Any]:
    driver = admin(fake)
    team_id = driver.teams.get_team_by_name(team)["id"]
    found: dict[str, Any] = driver.channels.get_channel_by_name(team_id, name)
    return found


def usernames(fake: FakeMattermost, user_ids: list[str]) -> set[str]:
    return {fake.user(user_id)["username"] for user_id in user_ids}


def changes(fake: FakeMattermost) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.method != "GET"]


def test_first_run_sets_up_team_channels_bot_and_command_and_prints_the_env_lines(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(fake, capsys, "--on-call", "dana", "sam", "--supervisors", "lee")

    assert result.code == 0, result.stderr
    assert result.env == {
        "MATTERMOST_URL": fake.base_url,
        "MATTERMOST_BOT_TOKEN": result.env["MATTERMOST_BOT_TOKEN"],
        "MATTERMOST_TEAM": "care-team",
        "MATTERMOST_ONCALL_CHANNEL": "on-call",
        "MATTERMOST_SUPERVISOR_CHANNEL": "supervisors",
        "MATTERMOST_SLASH_TOKEN": result.env["MATTERMOST_SLASH_TOKEN"],
    }
    assert result.env["MATTERMOST_BOT_TOKEN"] and result.env["MATTERMOST_SLASH_TOKEN"]
    assert fake.admin_token not in result.stdout + result.stderr

    driver = admin(fake)
    team = driver.teams.get_team_by_name("care-team")
    assert team["type"] == "I"  # invite only: patient messages are posted in this team
    oncall = channel(fake, "care-team", "on-call")
    supervisors = channel(fake, "care-team", "supervisors")
    assert oncall["type"] == supervisors["type"] == "P"
    # The roster is exactly the staff named, plus the bot; not the admin who ran it.
    assert usernames(fake, fake.members_of(oncall["id"])) == {"dana", "sam", "clinic-assistant"}
    assert usernames(fake, fake.members_of(supervisors["id"])) == {"lee", "clinic-assistant"}

    bot = driver.users.get_user_by_username("clinic-assistant")
    assert bot["is_bot"] is True
    assert driver.teams.get_team_member(team["id"], bot["id"])["user_id"] == bot["id"]

    (command,) = driver.commands.list_commands_for_team({"team_id": team["id"]})
    assert command["trigger"] == "case"
    assert command["method"] == "P"
    assert command["url"] == f"{PUBLIC}/escalation/mattermost/command"
    assert command["auto_complete"] is True
    assert command["auto_complete_hint"] == "claim | resolve | handback | reply TEXT | status"
    assert command["token"] == result.env["MATTERMOST_SLASH_TOKEN"]


def test_the_printed_bot_token_signs_in_as_the_bot_and_reads_the_roster(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(fake, capsys, "--on-call", "dana", "sam")
    assert result.code == 0, result.stderr

    bot = Driver(fake.driver_options(result.env["MATTERMOST_BOT_TOKEN"]))
    me = bot.login()
    assert (me["username"], me["is_bot"]) == ("clinic-assistant", True)
    team = bot.teams.get_team_by_name("care-team")
    oncall = bot.channels.get_channel_by_name(team["id"], "on-call")
    members = bot.channels.get_channel_members(oncall["id"])
    assert usernames(fake, [m["user_id"] for m in members]) == {"dana", "sam", "clinic-assistant"}


def test_a_second_run_creates_nothing_and_keeps_the_tokens(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(fake, capsys, "--on-call", "dana", "sam", "--supervisors", "lee")
    assert first.code == 0, first.stderr
    fake.requests.clear()

    second = run(fake, capsys, "--on-call", "dana", "sam", "--supervisors", "lee")

    assert second.code == 0, second.stderr
    assert changes(fake) == []
    assert "nothing new, everything was in place" in second.stderr
    # A token is shown once, when it is made: the line is left commented out, with the reason.
    assert "MATTERMOST_BOT_TOKEN" not in second.env
    assert "# MATTERMOST_BOT_TOKEN=" in second.stdout
    assert "--new-token" in second.stderr
    assert second.env["MATTERMOST_SLASH_TOKEN"] == first.env["MATTERMOST_SLASH_TOKEN"]
    assert second.env == {k: v for k, v in first.env.items() if k != "MATTERMOST_BOT_TOKEN"}
    bot = Driver(fake.driver_options(first.env["MATTERMOST_BOT_TOKEN"]))
    assert bot.login()["username"] == "clinic-assistant"


def test_running_again_with_more_staff_only_adds_them(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(fake, capsys, "--on-call", "dana").code == 0
    fake.requests.clear()

    result = run(fake, capsys, "--on-call", "dana", "alex")

    assert result.code == 0, result.stderr
    alex = admin(fake).users.get_user_by_username("alex")
    oncall = channel(fake, "care-team", "on-call")
    assert changes(fake) == [
        ("POST", f"/teams/{oncall['team_id']}/members"),
        ("POST", f"/channels/{oncall['id']}/members"),
    ]
    assert [r.json["user_id"] for r in fake.requests if r.method == "POST"] == [alex["id"]] * 2
    assert usernames(fake, fake.members_of(oncall["id"])) == {
        "dana",
        "alex",
        "clinic-assistant",
    }


def test_new_token_makes_another_working_bot_token(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(fake, capsys)
    second = run(fake, capsys, "--new-token")

    assert second.code == 0, second.stderr
    assert second.env["MATTERMOST_BOT_TOKEN"] != first.env["MATTERMOST_BOT_TOKEN"]
    bot = Driver(fake.driver_options(second.env["MATTERMOST_BOT_TOKEN"]))
    assert bot.login()["username"] == "clinic-assistant"


def test_into_an_existing_team_with_an_existing_channel(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Mattermost the clinic already runs: its team, and an on-call channel someone made public.
    dana = admin(fake).users.get_user_by_username("dana")
    existing = fake.create_channel("on-call", type="O", members=[dana["id"]])

    result = run(fake, capsys, "--on-call", "sam", team="clinic")

    assert result.code == 0, result.stderr
    assert "team clinic exists" in result.stderr
    oncall = fake.channel_by_name("on-call")
    assert oncall is not None and oncall["id"] == existing["id"]  # found, not made again
    assert "is public" in result.stderr
    # Nobody is taken off a roster the clinic already had.
    assert usernames(fake, fake.members_of(existing["id"])) == {"dana", "sam", "clinic-assistant"}
    supervisors = fake.channel_by_name("supervisors")
    assert supervisors is not None
    assert usernames(fake, fake.members_of(supervisors["id"])) == {"clinic-assistant"}


def test_a_changed_public_address_updates_the_command_and_keeps_its_token(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(fake, capsys)
    second = run(fake, capsys, public="https://assistant.clinic.example/")

    assert second.code == 0, second.stderr
    team = admin(fake).teams.get_team_by_name("care-team")
    (command,) = admin(fake).commands.list_commands_for_team({"team_id": team["id"]})
    assert command["url"] == "https://assistant.clinic.example/escalation/mattermost/command"
    assert second.env["MATTERMOST_SLASH_TOKEN"] == first.env["MATTERMOST_SLASH_TOKEN"]


def test_an_internal_app_address_is_flagged_unless_mattermost_allows_it(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = run(fake, capsys, public="http://web:8000")
    assert refused.code == 0, refused.stderr
    assert "Allow untrusted internal connections" in refused.stderr

    fake.config["ServiceSettings"]["AllowedUntrustedInternalConnections"] = "web 10.0.0.0/8"
    allowed = run(fake, capsys, public="http://web:8000")
    assert "Allow untrusted internal connections" not in allowed.stderr


def test_a_token_that_is_not_a_system_admins_fails_with_what_to_do(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    nurse = admin(fake).users.get_user_by_username("dana")
    fake.requests.clear()

    result = run(fake, capsys, "--on-call", "dana", token=fake.token_for(nurse["id"]))

    assert result.code == 2
    assert result.env == {}
    assert "'dana', who is not a system admin" in result.stderr
    assert "needs a system admin's personal access token" in result.stderr
    assert (
        "System Console → Integrations → Integration Management → Enable Personal Access "
        "Tokens" in result.stderr
    )
    assert changes(fake) == []


def test_a_refused_token_fails_with_what_to_do(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(fake, capsys, token="not-a-token")

    assert result.code == 2
    assert "did not accept the admin token" in result.stderr
    assert "Enable Personal Access Tokens" in result.stderr
    assert "not-a-token" not in result.stdout + result.stderr


def test_unknown_staff_stop_the_run_before_anything_changes(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.requests.clear()

    result = run(fake, capsys, "--on-call", "dana", "ghost", "--supervisors", "@Lee")

    assert result.code == 2
    assert "no Mattermost account for ghost" in result.stderr
    assert "nothing was changed" in result.stderr
    assert changes(fake) == []


def test_missing_settings_are_named(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        bootstrap.main(["--url", fake.base_url])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--admin-token (or MATTERMOST_ADMIN_TOKEN)" in err
    assert "--public-base-url (or PUBLIC_BASE_URL)" in err


def test_settings_come_from_the_environment_too(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATTERMOST_URL", fake.base_url)
    monkeypatch.setenv("MATTERMOST_ADMIN_TOKEN", fake.admin_token)
    monkeypatch.setenv("MATTERMOST_TEAM", "care-team")
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC)
    monkeypatch.setenv("MATTERMOST_ONCALL_USERS", "dana, sam")

    assert bootstrap.main([]) == 0
    capsys.readouterr()
    oncall = channel(fake, "care-team", "on-call")
    assert usernames(fake, fake.members_of(oncall["id"])) == {"dana", "sam", "clinic-assistant"}


def test_driver_options_keep_scheme_port_and_path() -> None:
    options = bootstrap.driver_options("https://chat.clinic.example/mm/", "t")
    assert {k: options[k] for k in ("url", "scheme", "port", "token", "basepath")} == {
        "url": "chat.clinic.example",
        "scheme": "https",
        "port": 443,
        "token": "t",
        "basepath": "/mm/api/v4",
    }
    assert options["request_timeout"] == 30
    options = bootstrap.driver_options("http://mattermost:8065", "t")
    assert (options["scheme"], options["url"], options["port"], options["basepath"]) == (
        "http",
        "mattermost",
        8065,
        "/api/v4",
    )
    with pytest.raises(bootstrap.BootstrapError):
        bootstrap.driver_options("mattermost:8065", "t")


def test_bot_creation_switched_off_names_the_setting(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a server with EnableBotAccountCreation off answers (api.bot.create_disabled).
    fake.fail_next("POST", "/bots", status=403)

    result = run(fake, capsys)

    assert result.code == 2
    assert "Bot account creation is disabled" in result.stderr
    assert "Enable Bot Account Creation" in result.stderr
    assert "MM_SERVICESETTINGS_ENABLEBOTACCOUNTCREATION=true" in result.stderr


def test_a_failure_halfway_is_finished_by_running_again(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_next("POST", "/commands", status=500)

    failed = run(fake, capsys, "--on-call", "dana")

    assert failed.code == 1
    assert "while registering the /case slash command" in failed.stderr
    assert "run the bootstrap again" in failed.stderr
    assert failed.env == {}

    finished = run(fake, capsys, "--on-call", "dana")

    assert finished.code == 0, finished.stderr
    assert "created slash command /case" in finished.stderr
    # The bot's token is made last, so the failed run did not use up the one chance to show it.
    bot = Driver(fake.driver_options(finished.env["MATTERMOST_BOT_TOKEN"]))
    assert bot.login()["username"] == "clinic-assistant"


def test_a_disabled_bot_is_enabled_again(
    fake: FakeMattermost, capsys: pytest.CaptureFixture[str]
) -> None:
    # What Mattermost does to a bot whose owner's account is deactivated.
    assert run(fake, capsys).code == 0
    bot = admin(fake).users.get_user_by_username("clinic-assistant")
    fake.deactivate_user(bot["id"])

    result = run(fake, capsys)

    assert result.code == 0, result.stderr
    assert "bot clinic-assistant was disabled: enabled it" in result.stderr
    assert fake.user(bot["id"])["delete_at"] == 0
