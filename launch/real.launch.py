"""ros2 launch robot_rl real.launch.py [learner_host:=IP] [train_config:=FILE] [keys_dir:=DIR] [key_name:=NAME]
                                    [actor_id:=ID] [params_file:=FILE]

Starts robot_rl_actor_node on the robot controller (the robot env: sensors -> observations, actions -> position
targets at ``control_hz``; the actor streaming to the learner) and robot_rl_safety_node, the process that owns the
ros2_control command topics: it interpolates the actor's targets, applies the safety layer and commands at
``command_hz``, holding by itself if the actor stalls or dies. Every other parameter is in
``params_file`` (default: share/robot_rl/config/real.yaml); a launch argument left out keeps the file's value.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from robot_rl.hardware.ros2.config import LAUNCH_FORWARDED, launch_overrides


def _nodes(context):
    # Resolved at launch time so that only the arguments actually given become parameters (see launch_overrides).
    given = launch_overrides({name: LaunchConfiguration(name).perform(context) for name in LAUNCH_FORWARDED})
    params_file = LaunchConfiguration("params_file").perform(context)
    # The safety node reads the actor's section of the same file: one set of limits and topics for both.
    safety = Node(package="robot_rl", executable="robot_rl_safety_node", name="robot_rl_safety", output="screen",
                  parameters=[{"params_files": [params_file]}])
    # On SIGINT the actor finishes its step, flushes the transport (up to 5 s) and leaves the robot holding:
    # more than launch's default 5 s before it escalates to SIGTERM.
    actor = Node(package="robot_rl", executable="robot_rl_actor_node", name="robot_rl_actor", output="screen",
                 emulate_tty=True, sigterm_timeout="15",
                 parameters=[params_file, given, {"command.via_safety_node": True}])
    return [safety, actor]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("robot_rl"), "config", "real.yaml"])
    arguments = [DeclareLaunchArgument("params_file", default_value=default_params,
                                       description="robot_rl_actor parameters (topics, rates, limits, QoS)")]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text)
                  for name, text in LAUNCH_FORWARDED.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
