/*
 * test_policy.c - the roles' side of the Lua policies (core/roles/policy.c): routing's
 * codes become the sentences the gateway answers with (the same as before policies
 * answered with codes), a failing or misbehaving policy becomes the documented fallback
 * (-3 for routing, -1 for faults), and faults' actions map to what replication does.
 * Runs the product's own lua/policies/ for the answers, and small files for the failures.
 */
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua/host.h"
#include "roles/policy.h"
#include "unit.h"
#include "unit_lua.h"

static const char *const names[] = {"us-east", "us-west", "eu-west"};

static struct host *product_host(void)
{
    struct host_info info = {"gateway", "gw-1", "us-east", 50};
    struct host *h = host_new(COUNTERD_DEFAULT_LUA_DIR, &info, NULL);
    policy_declare(h);
    return h;
}

static void test_routing_codes_become_sentences(void)
{
    struct host *h = product_host();
    char err[512] = "";
    int up[3] = {1, 1, 1}, down[3] = {0, 0, 0};
    int top = lua_gettop(host_state(h));
    CHECK(policy_route(h, "us-west", "c", NULL, NULL, names, up, 3, err, sizeof err) == 1);
    CHECK(policy_route(h, "teleport", "c", NULL, NULL, names, up, 3, err, sizeof err) == -1);
    CHECK_STR_EQ(err, "unknown routing policy 'teleport' (known: random, round-robin, sticky, "
                      "nearest, us-east, us-west, eu-west)");
    CHECK(policy_route(h, "random", "c", NULL, "tok", names, down, 3, err, sizeof err) == -2);
    CHECK_STR_EQ(err, "no healthy region");
    CHECK(lua_gettop(host_state(h)) == top);
    host_free(h);
}

static void test_faults_actions(void)
{
    struct host *h = product_host();
    char err[512];
    REQUIRE(host_load_policy(h, "faults", err, sizeof err) == 0);
    int ms = 0;
    CHECK(policy_faults_decide(h, "out", "us-east-1", "us-east-2", "sync", 0, &ms) == 0);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "eu-west-1", "sync", 1, &ms) == 1);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "eu-west-1", "sync", 0, &ms) == 2);
    CHECK(ms == 40);
    host_free(h);
}

/* Writes policies/<name>.lua in the test's Lua folder (unit_lua.h). */
static void put(const char *name, const char *text)
{
    unit_lua_put("test_policy", "policies", name, text);
}

static struct host *fixture_host(void)
{
    struct host_info info = {"region", "r-1", "us-east", 50};
    struct host *h = host_new(unit_lua_dir("test_policy"), &info, NULL);
    policy_declare(h);
    return h;
}

/* route(policy) answers what the policy name says. */
static const char routing_lua[] =
    "local M = {}\n"
    "function M.route(policy, counter, client, names, healthy, token)\n"
    "  if policy == 'raise' then error('broken') end\n"
    "  if policy == 'zero' then return 0 end\n"
    "  if policy == 'far' then return #names + 1 end\n"
    "  if policy == 'own' then return nil, 'closed_for_lunch' end\n"
    "  if policy == 'bare' then return nil end\n"
    "  if policy == 'nolist' then return nil, 'unknown_policy' end\n"
    "  if policy == 'loop' then while true do end end\n"
    "  if policy == 'args' then\n"
    "    return (counter == 'c' and client == 'eu-north' and token == 't' and #names == 3 and\n"
    "            healthy[1] == false and healthy[2] == true) and 2 or 1\n"
    "  end\n"
    "  return 3\n"
    "end\n"
    "return M\n";

static void test_routing_failures_fall_back(void)
{
    put("routing", routing_lua);
    struct host *h = fixture_host();
    char err[512];
    int healthy[3] = {0, 1, 1};
    struct {
        const char *policy;
        int rc;
        const char *err;
    } cases[] = {
        {"raise", -3, NULL},
        {"zero", -3, NULL},
        {"far", -3, NULL},
        {"loop", -3, NULL},
        {"own", -2, "closed_for_lunch"},
        {"bare", -2, "no region"},
        {"nolist", -1, "unknown routing policy 'nolist'"},
        {"plain", 2, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unit_context("%s", cases[i].policy);
        strcpy(err, "(unset)");
        CHECK(policy_route(h, cases[i].policy, "c", NULL, NULL, names, healthy, 3, err,
                           sizeof err) == cases[i].rc);
        if (cases[i].err)
            CHECK_STR_EQ(err, cases[i].err);
    }
    unit_context("%s", "");
    CHECK(policy_route(h, "args", "c", "eu-north", "t", names, healthy, 3, err, sizeof err) == 1);
    host_free(h);

    /* No routing file at all, or one without route(): refused at load, then -3. */
    put("routing", "return { rout = function() return 1 end }\n");
    h = fixture_host();
    CHECK(host_load_policy(h, "routing", err, sizeof err) == -1);
    CHECK(strstr(err, "the file must return a table with a route() function") != NULL);
    CHECK(policy_route(h, "plain", "c", NULL, NULL, names, healthy, 3, err, sizeof err) == -3);
    host_free(h);
}

static void test_faults_failures_deliver(void)
{
    put("faults", "local M = {}\n"
                  "function M.decide(dir, from, to, kind)\n"
                  "  if kind == 'raise' then error('broken') end\n"
                  "  if kind == 'odd' then return 'teleport' end\n"
                  "  if kind == 'long' then return 'delay', 600001 end\n"
                  "  if kind == 'none' then return nil end\n"
                  "  return 'delay', 12\n"
                  "end\n"
                  "return M\n");
    struct host *h = fixture_host();
    int ms = 0;
    CHECK(policy_faults_decide(h, "out", "a", "b", "sync", 0, &ms) == -1); /* not loaded */
    char err[512];
    REQUIRE(host_load_policy(h, "faults", err, sizeof err) == 0);
    CHECK(policy_faults_decide(h, "out", "a", "b", "sync", 0, &ms) == 2);
    CHECK(ms == 12);
    const char *kinds[] = {"raise", "odd", "long", "none"};
    for (int i = 0; i < 4; i++) {
        unit_context("%s", kinds[i]);
        CHECK(policy_faults_decide(h, "out", "a", "b", kinds[i], 0, &ms) == -1);
    }
    host_free(h);
}

/* The wire's question: faults.link gives the matrix and the region cuts; with --net
 * ("faults.net") decide's delay becomes a delivery, its drops stay. */
static void test_faults_link_and_net(void)
{
    struct host *h = product_host();
    char err[512];
    REQUIRE(host_load_policy(h, "faults", err, sizeof err) == 0);
    int ms = -1, cut = -1;
    CHECK(policy_faults_link(h, "us-west", "eu-west", &ms, &cut, err, sizeof err) == 0);
    CHECK(ms == 70 && cut == 0);
    host_shared_set_number(h, "faults.cut.eu-west|us-east", 1);
    CHECK(policy_faults_link(h, "us-east", "eu-west", &ms, &cut, err, sizeof err) == 0);
    CHECK(ms == 40 && cut == 1);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "us-west-1", "sync", 0, &ms) == 2);
    host_shared_set_number(h, "faults.net", 1);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "us-west-1", "sync", 0, &ms) == 0);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "eu-west-1", "sync", 0, &ms) == 1);
    CHECK(policy_faults_decide(h, "out", "us-east-1", "us-west-1", "sync", 1, &ms) == 1);
    host_free(h);

    put("faults", "local M = {}\n"
                  "function M.decide() return 'deliver' end\n"
                  "function M.link(a, b)\n"
                  "  if a == 'raise' then error('broken') end\n"
                  "  if a == 'far' then return 600001 end\n"
                  "  return 'soon'\n"
                  "end\n"
                  "return M\n");
    h = fixture_host();
    REQUIRE(host_load_policy(h, "faults", err, sizeof err) == 0);
    const char *bad[] = {"raise", "far", "word"};
    for (int i = 0; i < 3; i++) {
        unit_context("%s", bad[i]);
        err[0] = '\0';
        CHECK(policy_faults_link(h, bad[i], "b", &ms, &cut, err, sizeof err) == -1);
        CHECK(err[0] != '\0');
    }
    unit_context("%s", "");
    host_free(h);
    put("faults", "return { decide = function() return 'deliver' end }\n");
    h = fixture_host();
    REQUIRE(host_load_policy(h, "faults", err, sizeof err) == 0);
    CHECK(policy_faults_link(h, "a", "b", &ms, &cut, err, sizeof err) == -1); /* no link() */
    host_free(h);
}

static void test_lab_regions(void)
{
    struct host *h = product_host();
    char n[8][64], u[8][512];
    CHECK(policy_lab_regions(h, n, u, 8) == 3);
    CHECK_STR_EQ(n[0], "us-east");
    CHECK_STR_EQ(u[0], "http://127.0.0.1:8001");
    CHECK_STR_EQ(n[2], "eu-west");
    CHECK(policy_lab_regions(h, n, u, 2) == 2);
    host_free(h);
    h = fixture_host(); /* no conf/lab.lua there */
    CHECK(policy_lab_regions(h, n, u, 8) == 0);
    host_free(h);
}

UNIT_MAIN("policy", UNIT_CASE(test_routing_codes_become_sentences), UNIT_CASE(test_faults_actions),
          UNIT_CASE(test_routing_failures_fall_back), UNIT_CASE(test_faults_failures_deliver),
          UNIT_CASE(test_lab_regions), UNIT_CASE(test_faults_link_and_net))
