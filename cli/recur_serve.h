/* recur_serve.h: the `recur serve` and `recur client` commands (cli/recur_serve.c). */
#ifndef RECUR_SERVE_H
#define RECUR_SERVE_H
int recur_serve_main(int argc, char **argv, int first);
int recur_client_main(int argc, char **argv, int first);
#endif
