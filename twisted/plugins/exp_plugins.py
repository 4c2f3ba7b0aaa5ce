from twisted.application.service import ServiceMaker

exp = ServiceMaker("exp", "exp.tap", "Run an EXP device app.", "exp")
exp_server = ServiceMaker("exp-server", "exp.server.tap", "Run the local EXP server.", "exp-server")
