"""CloudFormation custom resource: refuses parameter values the functions would refuse, before the stack builds on them."""

from makima.lambda_support.parameters_check import make_parameters_check_handler

handler = make_parameters_check_handler()
