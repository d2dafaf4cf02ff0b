#include "qemu_opts.h"

#include <json-c/json.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void opt_clear(struct qemu_opt *opt)
{
	free(opt->key);
	free(opt->value);
	opt->key = NULL;
	opt->value = NULL;
}

static int opts_push(struct qemu_opts *o, char *key, char *value)
{
	struct qemu_opt *v;

	v = realloc(o->v, (o->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	o->v = v;
	v[o->n].key = key;
	v[o->n].value = value;
	o->n++;
	return 0;
}

/* Copy one element of text into a new string, turning ",," into ",".
 * *pos is left on the separating comma or the final NUL. */
static char *element_dup(const char *text, size_t *pos)
{
	size_t i = *pos, n = 0;
	char *s;

	s = malloc(strlen(text + i) + 1);
	if (!s)
		return NULL;
	while (text[i]) {
		if (text[i] == ',') {
			if (text[i + 1] != ',')
				break;
			i++;
		}
		s[n++] = text[i++];
	}
	s[n] = '\0';
	*pos = i;
	return s;
}

/* Split one unescaped element into key and value. Only the first element
 * may be bare (QEMU's implied option name, e.g. the driver); later ones
 * without "=" are flags. */
static int opts_add_element(struct qemu_opts *o, char *elem)
{
	char *eq = strchr(elem, '=');
	char *key = NULL, *value = NULL;
	int ret;

	if (!eq) {
		if (o->n == 0)
			ret = opts_push(o, NULL, elem);
		else
			ret = opts_push(o, elem, NULL);
		if (ret)
			free(elem);
		return ret;
	}
	if (eq == elem) {
		ret = -EINVAL;
		goto out;
	}
	ret = -ENOMEM;
	key = strndup(elem, eq - elem);
	value = strdup(eq + 1);
	if (!key || !value)
		goto out;
	ret = opts_push(o, key, value);
	if (!ret)
		key = value = NULL;
out:
	free(key);
	free(value);
	free(elem);
	return ret;
}

int qemu_opts_parse(const char *text, struct qemu_opts *out)
{
	struct qemu_opts o = { NULL, 0 };
	size_t pos = 0;
	char *elem;
	int ret = 0;

	if (!text)
		return -EINVAL;
	while (text[pos]) {
		elem = element_dup(text, &pos);
		if (!elem) {
			ret = -ENOMEM;
			goto out;
		}
		ret = opts_add_element(&o, elem);
		if (ret)
			goto out;
		/* A single trailing comma ends the text, as in QEMU. */
		if (text[pos] == ',')
			pos++;
	}
out:
	if (ret)
		qemu_opts_free(&o);
	else
		*out = o;
	return ret;
}

static size_t escaped_len(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == ',' ? 2 : 1;
	return n;
}

static char *put_escaped(char *p, const char *s)
{
	for (; *s; s++) {
		*p++ = *s;
		if (*s == ',')
			*p++ = ',';
	}
	return p;
}

char *qemu_opts_print(const struct qemu_opts *o)
{
	size_t i, len = 1;
	char *s, *p;

	for (i = 0; i < o->n; i++) {
		if (o->v[i].key)
			len += escaped_len(o->v[i].key);
		if (o->v[i].value)
			len += escaped_len(o->v[i].value) + 1;
		len++;
	}
	s = malloc(len);
	if (!s)
		return NULL;
	p = s;
	for (i = 0; i < o->n; i++) {
		if (i)
			*p++ = ',';
		if (o->v[i].key)
			p = put_escaped(p, o->v[i].key);
		if (o->v[i].key && o->v[i].value)
			*p++ = '=';
		if (o->v[i].value)
			p = put_escaped(p, o->v[i].value);
	}
	*p = '\0';
	return s;
}

void qemu_opts_free(struct qemu_opts *o)
{
	size_t i;

	for (i = 0; i < o->n; i++)
		opt_clear(&o->v[i]);
	free(o->v);
	o->v = NULL;
	o->n = 0;
}

static int key_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

/* QEMU lets the last occurrence of a repeated key win. */
const char *qemu_opts_get(const struct qemu_opts *o, const char *key)
{
	size_t i;

	if (!key)
		return NULL;
	for (i = o->n; i-- > 0;)
		if (key_eq(o->v[i].key, key))
			return o->v[i].value;
	return NULL;
}

const char *qemu_opts_first_bare(const struct qemu_opts *o)
{
	if (o->n && !o->v[0].key)
		return o->v[0].value;
	return NULL;
}

/* Insert a bare value in front, where QEMU expects the implied option. */
static int opts_set_bare(struct qemu_opts *o, const char *value)
{
	char *v = value ? strdup(value) : NULL;
	int ret;

	if (value && !v)
		return -ENOMEM;
	if (o->n && !o->v[0].key) {
		free(o->v[0].value);
		o->v[0].value = v;
		return 0;
	}
	ret = opts_push(o, NULL, v);
	if (ret) {
		free(v);
		return ret;
	}
	memmove(o->v + 1, o->v, (o->n - 1) * sizeof(*o->v));
	o->v[0].key = NULL;
	o->v[0].value = v;
	return 0;
}

static void opts_remove_at(struct qemu_opts *o, size_t i)
{
	opt_clear(&o->v[i]);
	memmove(o->v + i, o->v + i + 1, (o->n - i - 1) * sizeof(*o->v));
	o->n--;
}

int qemu_opts_set(struct qemu_opts *o, const char *key, const char *value)
{
	char *k = NULL, *v = NULL;
	size_t i;
	int ret = -ENOMEM;

	if (!key)
		return opts_set_bare(o, value);
	/* Replace in place so the order of the other keys is kept: QEMU sets
	 * object properties in the order they are given. */
	for (i = 0; i < o->n; i++)
		if (key_eq(o->v[i].key, key))
			break;
	if (value) {
		v = strdup(value);
		if (!v)
			goto out;
	}
	if (i < o->n) {
		free(o->v[i].value);
		o->v[i].value = v;
		v = NULL;
		for (i++; i < o->n;)
			if (key_eq(o->v[i].key, key))
				opts_remove_at(o, i);
			else
				i++;
		ret = 0;
		goto out;
	}
	k = strdup(key);
	if (!k)
		goto out;
	ret = opts_push(o, k, v);
	if (!ret)
		k = v = NULL;
out:
	free(k);
	free(v);
	return ret;
}

void qemu_opts_del(struct qemu_opts *o, const char *key)
{
	size_t i = 0;

	while (i < o->n) {
		if (key_eq(o->v[i].key, key))
			opts_remove_at(o, i);
		else
			i++;
	}
}

/* Members of obj as key=value, nested objects as "outer.inner". */
static int flatten_json(struct json_object *obj, const char *prefix, struct qemu_opts *o)
{
	json_object_object_foreach(obj, key, val) {
		char full[256];
		int rc;

		snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", key);
		if (json_object_is_type(val, json_type_object))
			rc = flatten_json(val, full, o);
		else if (!*prefix && !strcmp(key, "type"))
			rc = qemu_opts_set(o, NULL, json_object_get_string(val));
		else
			rc = qemu_opts_set(o, full, json_object_get_string(val));
		if (rc)
			return rc;
	}
	return 0;
}

int qemu_opts_parse_any(const char *text, struct qemu_opts *out)
{
	struct json_object *obj;
	int rc;

	if (text[0] != '{')
		return qemu_opts_parse(text, out);
	memset(out, 0, sizeof(*out));
	obj = json_tokener_parse(text);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return -EINVAL;
	}
	rc = flatten_json(obj, "", out);
	json_object_put(obj);
	if (rc)
		qemu_opts_free(out);
	return rc;
}
