"""The route table: every path the gateway serves, in one place.

Each route names the owning service, who may call it (`Policy`), and the models that
validate its input and describe it in the OpenAPI document. Request and response models
are the owning service's own (`contracts/api/<service>.py`), referenced by name so that
this table reads like §5; `resolve()` finds them and a unit test fails when one is missing.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from enum import Enum

from pydantic import BaseModel

from contracts.api import gateway as own
from contracts.topics import CONSUMING_SERVICES
from services.runtime import dead_letters


class Policy(Enum):
    #: no token at all: documents third parties must reach (Open Badges verification)
    PUBLIC = "public"
    #: any authenticated caller (leaderboards, catalogue, badge definitions)
    ANYONE = "anyone"
    #: agent: only themselves; manager: agents of their team; admin, service: anyone
    AGENT_READ = "agent_read"
    #: learning activity: the agent themselves, or admin/service (imports, backfill)
    AGENT_WRITE = "agent_write"
    #: a team's data: its manager, admin, service
    TEAM_READ = "team_read"
    #: roster, catalogue, tickets, adjustments: admin and service only
    WRITER = "writer"
    #: operations (dead letters, rebuilds): admins only, not even other services
    ADMIN = "admin"


@dataclass(frozen=True)
class ModelRef:
    """A pydantic model of `contracts/api/<module>.py`, by name."""

    module: str
    name: str

    def resolve(self) -> type[BaseModel]:
        module = importlib.import_module(f"contracts.api.{self.module}")
        model = getattr(module, self.name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"contracts.api.{self.module}.{self.name} is not a pydantic model")
        return model


Model = ModelRef | type[BaseModel] | None

PARAM = re.compile(r"\{([a-z_]+)\}")
#: Path parameters that are not ids, and the pattern each must match instead.
PATH_PATTERNS = {"period": own.PERIOD_PATTERN}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI template, e.g. /v1/agents/{agent_id}
    service: str  # owning service, or "gateway" for what the gateway answers itself
    policy: Policy
    summary: str
    body: Model = None
    query: Model = None
    response: Model = None
    status: int = 200
    #: may the body carry `occurred_at` (backfill)? Only admin and service callers may.
    backfill: bool = False
    #: query parameters only admin and service callers may set to anything but this value
    #: (e.g. `published`: learners see published courses, not drafts)
    writer_query: tuple[tuple[str, str], ...] = ()
    #: the statuses the service may answer besides success, 400, 401, 403, 503
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=())

    @property
    def params(self) -> list[str]:
        return PARAM.findall(self.path)

    @property
    def rule(self) -> str:
        """The werkzeug URL rule (and the route label of the HTTP metrics)."""
        return PARAM.sub(r"<\1>", self.path)

    @property
    def name(self) -> str:
        """A stable operation id, e.g. `get_agents_agent_id_points`."""
        words = [p.strip("{}") for p in self.path.split("/")[2:] if p]
        return "_".join([self.method.lower(), *words]).replace("-", "_")

    def model(self, which: str) -> type[BaseModel] | None:
        ref = getattr(self, which)
        return ref.resolve() if isinstance(ref, ModelRef) else ref


def progress(name: str) -> ModelRef:
    return ModelRef("progress", name)


def points(name: str) -> ModelRef:
    return ModelRef("points", name)


def leaderboards(name: str) -> ModelRef:
    return ModelRef("leaderboards", name)


def credits(name: str) -> ModelRef:
    return ModelRef("credits", name)


def badges(name: str) -> ModelRef:
    return ModelRef("badges", name)


A = Policy
AGENT = "/v1/agents/{agent_id}"
MODULE = AGENT + "/courses/{course_id}/modules/{module_id}"
WRITE_ERRORS = (404, 409, 422)

ROUTES: tuple[Route, ...] = (
    # roster (progress)
    Route(
        "POST",
        "/v1/agents",
        "progress",
        A.WRITER,
        "Register an agent",
        body=progress("AgentCreate"),
        response=progress("Agent"),
        status=201,
        backfill=True,
        errors=(409, 422),
    ),
    Route(
        "GET",
        "/v1/agents",
        "progress",
        A.TEAM_READ,
        "The roster (managers: `team_id` must be their team)",
        query=progress("AgentQuery"),
        response=progress("AgentList"),
    ),
    Route(
        "GET",
        AGENT,
        "progress",
        A.AGENT_READ,
        "One agent of the roster",
        response=progress("Agent"),
        errors=(404,),
    ),
    Route(
        "PATCH",
        AGENT,
        "progress",
        A.WRITER,
        "Change an agent's name, team or tier",
        body=progress("AgentPatch"),
        response=progress("Agent"),
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    # catalogue (progress)
    Route(
        "POST",
        "/v1/courses",
        "progress",
        A.WRITER,
        "Create a course (published at once unless `published` is false)",
        body=progress("CourseCreate"),
        response=progress("Course"),
        status=201,
        errors=(409, 422),
    ),
    Route(
        "GET",
        "/v1/courses",
        "progress",
        A.ANYONE,
        "The course catalogue (drafts, `published=false|any`: admin and service only)",
        query=progress("CourseQuery"),
        writer_query=(("published", "true"),),
        response=progress("CourseList"),
    ),
    Route(
        "GET",
        "/v1/courses/{course_id}",
        "progress",
        A.ANYONE,
        "One course",
        response=progress("Course"),
        errors=(404,),
    ),
    Route(
        "PATCH",
        "/v1/courses/{course_id}",
        "progress",
        A.WRITER,
        "Change a course",
        body=progress("CoursePatch"),
        response=progress("Course"),
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        "/v1/courses/{course_id}/publish",
        "progress",
        A.WRITER,
        "Publish a course",
        response=progress("Course"),
        errors=WRITE_ERRORS,
    ),
    # learning activity (progress)
    Route(
        "POST",
        AGENT + "/enrollments",
        "progress",
        A.AGENT_WRITE,
        "Enrol in a course",
        body=progress("EnrollmentCreate"),
        response=progress("CourseProgress"),
        status=201,
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        MODULE + "/complete",
        "progress",
        A.AGENT_WRITE,
        "Complete a lesson or practice module",
        body=progress("ModuleCompletion"),
        response=progress("CourseProgress"),
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        MODULE + "/attempts",
        "progress",
        A.AGENT_WRITE,
        "Attempt a quiz or role-play module with a score",
        body=progress("AttemptCreate"),
        response=progress("AttemptResult"),
        status=201,
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        AGENT + "/courses/{course_id}/feedback",
        "progress",
        A.AGENT_WRITE,
        "Rate a completed course (1-5, with a comment)",
        body=progress("FeedbackCreate"),
        response=progress("FeedbackResult"),
        status=201,
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        AGENT + "/courses",
        "progress",
        A.AGENT_READ,
        "Progress per course",
        query=progress("CourseProgressQuery"),
        response=progress("CourseProgressList"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/courses/{course_id}",
        "progress",
        A.AGENT_READ,
        "Progress in one course",
        response=progress("CourseProgress"),
        errors=(404,),
    ),
    # work (progress)
    Route(
        "POST",
        "/v1/tickets",
        "progress",
        A.WRITER,
        "Report a resolved ticket (service role)",
        body=progress("TicketCreate"),
        response=progress("TicketReceipt"),
        status=202,
        backfill=True,
        errors=WRITE_ERRORS,
    ),
    # points
    Route(
        "GET",
        AGENT + "/points",
        "points",
        A.AGENT_READ,
        "Points balance and history, newest first",
        query=points("HistoryQuery"),
        response=points("PointsView"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/points/awards/{award_id}",
        "points",
        A.AGENT_READ,
        "One entry of an agent's points ledger",
        response=points("LedgerEntry"),
        errors=(404,),
    ),
    Route(
        "POST",
        AGENT + "/points/adjustments",
        "points",
        A.WRITER,
        "Adjust an agent's points (positive or negative, with a reason)",
        body=points("AdjustmentRequest"),
        response=points("LedgerEntry"),
        status=201,
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        AGENT + "/points/awards/{award_id}/reversal",
        "points",
        A.WRITER,
        "Reverse one award of an agent's ledger",
        body=points("ReversalRequest"),
        response=points("LedgerEntry"),
        status=201,
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        "/v1/points/rules",
        "points",
        A.ANYONE,
        "The points rules in force",
        response=points("RulesView"),
    ),
    Route(
        "PUT",
        "/v1/points/rules/{rule_id}",
        "points",
        A.WRITER,
        "Change a points rule",
        body=points("RuleUpdate"),
        response=points("RuleView"),
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        "/v1/points/rules/{rule_id}",
        "points",
        A.ANYONE,
        "One points rule",
        response=points("RuleView"),
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/points/rules/{rule_id}/versions",
        "points",
        A.ANYONE,
        "Every version of a points rule, newest first",
        response=points("RuleVersionsView"),
        errors=(404,),
    ),
    # leaderboards
    Route(
        "GET",
        "/v1/leaderboards/{period}",
        "leaderboards",
        A.ANYONE,
        "A page of a leaderboard (top N with offset)",
        query=leaderboards("LeaderboardQuery"),
        response=leaderboards("Leaderboard"),
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/leaderboards/{period}/agents/{agent_id}",
        "leaderboards",
        A.ANYONE,
        "One agent's position with neighbours (404 when not on the board)",
        query=leaderboards("PositionQuery"),
        response=leaderboards("LeaderboardPosition"),
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/leaderboards/rebuild",
        "leaderboards",
        A.ADMIN,
        "Recompute every board from the applied-points log",
        body=leaderboards("RebuildRequest"),
        response=leaderboards("RebuildReport"),
    ),
    # credits
    Route(
        "GET",
        AGENT + "/credits",
        "credits",
        A.AGENT_READ,
        "The credit view: totals, expiring lots, next tier, recommendations",
        query=credits("CreditsQuery"),
        response=credits("AgentCredits"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/credits/lots",
        "credits",
        A.AGENT_READ,
        "Every credit lot of an agent",
        query=credits("LotsQuery"),
        response=credits("AgentLots"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/credits/lots/{lot_id}",
        "credits",
        A.AGENT_READ,
        "One credit lot of an agent",
        response=credits("CreditLot"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/credits/history",
        "credits",
        A.AGENT_READ,
        "Deposits, grants, revocations and expiries, newest first",
        query=credits("HistoryQuery"),
        response=credits("CreditHistory"),
        errors=(404,),
    ),
    Route(
        "POST",
        AGENT + "/credits/grants",
        "credits",
        A.WRITER,
        "Grant credits for external training (send `Idempotency-Key` to retry safely)",
        body=credits("CreditGrant"),
        response=credits("CreditLot"),
        status=201,
        errors=WRITE_ERRORS,
    ),
    Route(
        "POST",
        AGENT + "/credits/lots/{lot_id}/revocation",
        "credits",
        A.WRITER,
        "Revoke a credit lot",
        body=credits("LotRevocation"),
        response=credits("CreditLot"),
        errors=WRITE_ERRORS,
    ),
    Route(
        "GET",
        "/v1/teams/{team_id}/credits",
        "credits",
        A.TEAM_READ,
        "A team's readiness and expiring credits",
        query=credits("CreditsQuery"),
        response=credits("TeamCredits"),
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/credits/requirements",
        "credits",
        A.ANYONE,
        "The tier requirements",
        response=credits("Requirements"),
    ),
    # badges
    Route(
        "GET",
        AGENT + "/badges",
        "badges",
        A.AGENT_READ,
        "An agent's badges (oldest first) and progress toward the next levels",
        response=badges("AgentBadgesResponse"),
    ),
    Route(
        "GET",
        "/v1/badges",
        "badges",
        A.ANYONE,
        "Badge definitions",
        response=badges("BadgeDefinitionsResponse"),
    ),
    Route(
        "GET",
        "/v1/badges/{badge_id}",
        "badges",
        A.ANYONE,
        "One badge definition",
        response=badges("BadgeDefinitionView"),
        errors=(404,),
    ),
    Route(
        "GET",
        AGENT + "/badges/{badge_id}/credential",
        "badges",
        A.AGENT_READ,
        "An awarded badge as an Open Badges 3.0 credential (JSON-LD; `format=jwt`: signed, "
        'in `{"jwt": ...}`)',
        query=badges("CredentialQuery"),
        response=badges("OpenBadgeDocument"),
        errors=(404,),
    ),
    # Open Badges verification: whoever is shown a credential fetches these, without a token.
    Route(
        "GET",
        "/v1/badges/issuer",
        "badges",
        A.PUBLIC,
        "The Open Badges issuer profile",
        response=badges("OpenBadgeDocument"),
    ),
    Route(
        "GET",
        "/v1/badges/issuer/jwks",
        "badges",
        A.PUBLIC,
        "The public keys that verify signed credentials",
        response=badges("JsonWebKeySet"),
    ),
    Route(
        "GET",
        "/v1/badges/{badge_id}/achievement",
        "badges",
        A.PUBLIC,
        "A badge as an Open Badges 3.0 achievement",
        query=badges("AchievementQuery"),
        response=badges("OpenBadgeDocument"),
        errors=(404,),
    ),
    # the gateway's own
    Route(
        "GET",
        AGENT + "/profile",
        "gateway",
        A.AGENT_READ,
        "Everything about one agent in one call",
        response=own.ProfileResponse,
        errors=(404,),
    ),
)


def _dead_letter_routes(service: str) -> tuple[Route, ...]:
    """The dead-letter admin API of one consuming service (services/runtime/operations.py):
    the service is named in the path, so each maps to its own backend."""
    base = f"/v1/admin/{service}/dead-letters"
    return (
        Route(
            "GET",
            base,
            service,
            A.ADMIN,
            f"The {service} service's dead letters (oldest first)",
            query=dead_letters.DeadLetterQuery,
            response=dead_letters.DeadLetterList,
            tags=("operations",),
        ),
        Route(
            "GET",
            base + "/{position}",
            service,
            A.ADMIN,
            f"One dead letter of the {service} service, by `partition:offset`",
            response=dead_letters.DeadLetterView,
            errors=(404,),
            tags=("operations",),
        ),
        Route(
            "POST",
            base + "/replay",
            service,
            A.ADMIN,
            f"Put the {service} service's dead letters back on their topics "
            '(`{"positions": [...]}`; all when omitted); applied once',
            body=dead_letters.ReplayRequest,
            response=dead_letters.ReplayReport,
            tags=("operations",),
        ),
    )


ROUTES += tuple(route for service in CONSUMING_SERVICES for route in _dead_letter_routes(service))
