/*
 * config.h - oag-supervisor's options. One table (config.c) serves the command-line flags, the
 * configuration file and --help, so that a value is validated the same way wherever it comes
 * from.
 *
 * The file is INI (libinih): [supervisor] holds every long option as KEY = VALUE (switches take
 * true/false, repeatable options repeat the key), [fleet] holds command = the agent command
 * line. It is read first, then the flags, which override it.
 */
#ifndef OAG_SCHED_CONFIG_H
#define OAG_SCHED_CONFIG_H

#include "sup.h"

/* Sets every option of c to its default. */
void config_defaults(struct sup_config *c);

/*
 * Fills c (already holding the defaults) from the file named by --config/-c FILE, when one is
 * given, then from the flags. Returns 0; 1 when --help printed the usage on stdout (the caller
 * exits 0); or -EINVAL after printing one line on stderr naming the flag, or the file, line and
 * key, at fault (the caller exits 2); -ENOMEM likewise. Values read from the file are copied:
 * c owns them until config_fini(c); flag values point into argv. Not thread-safe (getopt).
 */
int config_parse(struct sup_config *c, int argc, char **argv);

/* Frees what config_parse() allocated for c; safe on a config it never filled. */
void config_fini(struct sup_config *c);

#endif
