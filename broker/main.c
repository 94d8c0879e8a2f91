/*
 * verityd: parse the configuration (file, environment, flags), run the
 * broker until SIGTERM / SIGINT, close every log cleanly, exit 0.
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration.
 * The program is broker/verityd_main.c.
 */
#include "broker/broker.h"

int main(int argc, char **argv)
{
    return verityd_main(argc, argv, NULL);
}
