/* What two agents of a pair tell each other (cold_start.h): the facts as
 * JSON, both ways, and the decision. Apart from the link, so that the
 * parser of the other host's bytes can be unit-tested and fuzzed
 * (fuzz/fuzz_peer_state.c). */
#include "cold_start.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

char *cold_facts_json(const struct cold_facts *f, const char *state)
{
	struct json_object *o = json_object_new_object();
	char *text;

	json_object_object_add(o, "host", json_object_new_string(f->host));
	json_object_object_add(o, "state", json_object_new_string(state));
	json_object_object_add(o, "waiting", json_object_new_boolean(f->waiting));
	json_object_object_add(o, "replica", json_object_new_boolean(f->replica));
	json_object_object_add(o, "ready", json_object_new_boolean(f->ready));
	json_object_object_add(o, "restored", json_object_new_boolean(f->restored));
	json_object_object_add(o, "generation", json_object_new_uint64(f->generation));
	json_object_object_add(o, "epoch", json_object_new_uint64(f->epoch));
	if (f->claim) {
		json_object_object_add(o, "claim_generation",
				       json_object_new_uint64(f->claim_generation));
		json_object_object_add(o, "claim_epoch", json_object_new_uint64(f->claim_epoch));
	}
	if (f->granted)
		json_object_object_add(o, "granted", json_object_new_boolean(1));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

/* 0, or -EPROTO for anything but the object cold_facts_json makes. */
int cold_facts_parse(const uint8_t *payload, uint32_t len, struct cold_facts *f,
		       struct json_object **owner)
{
	char *text = strndup((const char *)payload, len);
	struct json_object *o = text ? json_tokener_parse(text) : NULL, *h, *w, *r, *d, *g, *e, *y,
			   *cg = NULL, *ce = NULL, *gr;
	bool has_cg, has_ce;

	free(text);
	if (!o || !json_object_object_get_ex(o, "host", &h) || !json_object_is_type(h, json_type_string) ||
	    !json_object_object_get_ex(o, "waiting", &w) || !json_object_is_type(w, json_type_boolean) ||
	    !json_object_object_get_ex(o, "replica", &r) || !json_object_is_type(r, json_type_boolean) ||
	    !json_object_object_get_ex(o, "restored", &d) || !json_object_is_type(d, json_type_boolean) ||
	    !json_object_object_get_ex(o, "generation", &g) || !json_object_is_type(g, json_type_int) ||
	    !json_object_object_get_ex(o, "epoch", &e) || !json_object_is_type(e, json_type_int)) {
		json_object_put(o);
		return -EPROTO;
	}
	has_cg = json_object_object_get_ex(o, "claim_generation", &cg);
	has_ce = json_object_object_get_ex(o, "claim_epoch", &ce);
	if (has_cg != has_ce || (has_cg && (!json_object_is_type(cg, json_type_int) ||
					    !json_object_is_type(ce, json_type_int)))) {
		json_object_put(o);
		return -EPROTO;
	}
	*f = (struct cold_facts){
		.claim = has_cg,
		.claim_generation = has_cg ? json_object_get_uint64(cg) : 0,
		.claim_epoch = has_ce ? json_object_get_uint64(ce) : 0,
		.granted = json_object_object_get_ex(o, "granted", &gr) &&
			   json_object_is_type(gr, json_type_boolean) && json_object_get_boolean(gr),
		/* optional: an agent from before takeover = manual */
		.ready = json_object_object_get_ex(o, "ready", &y) &&
			 json_object_is_type(y, json_type_boolean) && json_object_get_boolean(y),
		.host = json_object_get_string(h),
		.waiting = json_object_get_boolean(w),
		.replica = json_object_get_boolean(r),
		.restored = json_object_get_boolean(d),
		.generation = json_object_get_uint64(g),
		.epoch = json_object_get_uint64(e),
	};
	*owner = o;
	return 0;
}

bool cold_start_wins(const struct cold_facts *us, const struct cold_facts *peer)
{
	if (!us->waiting || !us->replica || us->restored || !peer->waiting)
		return false;
	if (!peer->replica)
		return true;
	if (us->generation != peer->generation)
		return us->generation > peer->generation;
	if (us->epoch != peer->epoch)
		return us->epoch > peer->epoch;
	return strcmp(us->host, peer->host) < 0;
}

