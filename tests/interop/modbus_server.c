/* A Modbus TCP server built on libmodbus (an implementation independent of pymodbus), for the interop tests.
 *
 *   modbus_server PORT [--hole ADDR]... [--max-registers N] [--max-bits N]
 *
 * 10000 coils and holding registers, writable by any client. Input registers mirror the holding registers
 * and discrete inputs mirror the coils (Modbus cannot write those), so a test writes what it wants read.
 * --hole ADDR: any read or write touching register/bit ADDR answers exception 2 (illegal data address).
 * --max-registers / --max-bits: a request for more answers exception 3 (illegal data value), as a device
 * with a small buffer does. Prints "listening PORT" once it accepts connections. */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#define SIZE 10000
#define MAX_HOLES 64

static int holes[MAX_HOLES];
static int n_holes = 0;

static int touches_hole(int addr, int count) {
    for (int i = 0; i < n_holes; i++)
        if (holes[i] >= addr && holes[i] < addr + count) return 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [--hole ADDR]... [--max-registers N] [--max-bits N]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int max_registers = 125, max_bits = 2000;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--hole") && i + 1 < argc && n_holes < MAX_HOLES) holes[n_holes++] = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-registers") && i + 1 < argc) max_registers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-bits") && i + 1 < argc) max_bits = atoi(argv[++i]);
        else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *map = modbus_mapping_new(SIZE, SIZE, SIZE, SIZE);
    if (ctx == NULL || map == NULL) { fprintf(stderr, "out of memory\n"); return 1; }
    int server = modbus_tcp_listen(ctx, 16);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("listening %d\n", port);
    fflush(stdout);

    fd_set all;
    FD_ZERO(&all);
    FD_SET(server, &all);
    int fdmax = server;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    int header = modbus_get_header_length(ctx);
    for (;;) {
        fd_set ready = all;
        if (select(fdmax + 1, &ready, NULL, NULL, NULL) < 0) { perror("select"); return 1; }
        for (int fd = 0; fd <= fdmax; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            if (fd == server) {
                int client = modbus_tcp_accept(ctx, &server);
                if (client >= 0) {
                    FD_SET(client, &all);
                    if (client > fdmax) fdmax = client;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc == 0) continue; /* not for us (another unit id on RTU): nothing to answer */
            if (rc < 0) {
                close(fd);
                FD_CLR(fd, &all);
                continue;
            }
            int function = query[header];
            int addr = (query[header + 1] << 8) | query[header + 2];
            int count = (query[header + 3] << 8) | query[header + 4];
            if (function == 0x05 || function == 0x06) count = 1;
            if (function >= 0x01 && function <= 0x04) {
                int limit = function <= 0x02 ? max_bits : max_registers;
                if (count > limit) {
                    modbus_reply_exception(ctx, query, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE);
                    continue;
                }
            }
            if (function <= 0x06 || function == 0x0F || function == 0x10) {
                if (touches_hole(addr, count)) {
                    modbus_reply_exception(ctx, query, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS);
                    continue;
                }
            }
            memcpy(map->tab_input_registers, map->tab_registers, SIZE * sizeof(uint16_t));
            memcpy(map->tab_input_bits, map->tab_bits, SIZE);
            modbus_reply(ctx, query, rc, map);
        }
    }
}
